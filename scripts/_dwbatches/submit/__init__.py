"""Submitting: chunks and rounds planned, each upload and create made once, interrupted runs looked up."""
