"""Retrieval: binary indexes, search in every direction, evaluation metrics and reports."""
