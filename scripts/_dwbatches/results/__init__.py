"""Results: verified downloads, answers checked, the merge in input order, the fetch of a job or of batch ids."""
