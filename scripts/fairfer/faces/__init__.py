"""Face detection, alignment, FaceNet and its embeddings and fine-tuning (rules in
``workflow/rules/faces.smk`` and ``finetune.smk``)."""
