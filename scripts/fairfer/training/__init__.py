"""Training: the trainer, its data interface, models, strategies and demographic
augmentation (rules in ``workflow/rules/training.smk``)."""
