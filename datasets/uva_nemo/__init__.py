"""uva_nemo: the UvA-NEMO smile database as aligned landmark clips (manual download)."""
