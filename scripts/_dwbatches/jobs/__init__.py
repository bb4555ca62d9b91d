"""The job directory: its lock, its record (job.json), its status, claims on inputs, finding jobs."""
