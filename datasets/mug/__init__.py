"""mug: the MUG facial expression database as aligned landmark clips (manual download)."""
