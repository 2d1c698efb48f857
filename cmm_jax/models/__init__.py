"""The networks of CMM-Net, one file each."""
