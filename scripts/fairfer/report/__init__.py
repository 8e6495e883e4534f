"""The HTML report, its plots and Grad-CAM (rules in ``workflow/rules/report.smk``)."""
