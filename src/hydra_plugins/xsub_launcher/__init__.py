"""xsub's Hydra launchers (xsub_basic, xsub_local, xsub_slurm): a failed job does not end the sweep,
Slurm sweeps can submit and exit, and jobs get threads for the cores they share."""
