"""Stores: where archives live (local directory, S3 bucket, Glacier vault)."""
