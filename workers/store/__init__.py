"""The workers' own store code: claims and outcomes, the rescan's queries, dead letters."""
