"""Demographic labels: FairFace-trained classifiers, FairFace rendered like the emotion
dataset, external references and label-error correction (rules in ``workflow/rules/labels.smk``)."""
