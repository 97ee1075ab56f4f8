"""Histories for the learner: readers (trial traces, journals, Nightscout exports) and synthetic days."""
