"""Stage 1, data: reading cases (MSD and BraTS layouts), labels, statistics, the download and the phantom."""
