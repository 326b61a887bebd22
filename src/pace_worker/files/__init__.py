"""Structures and files on disk: reading, checking, finding, publishing, locking."""
