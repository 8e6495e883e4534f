rule gradcam_maps:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        predictions=rules.train_model.output.predictions,
        manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        model_inputs=lambda wildcards: face_inputs(wildcards.model, EMOTION_DATASET),
        modules=package_modules("gradcam_maps"),
    output:
        GRADCAM_MAP,
    params:
        gradcam=config["report"]["gradcam"],
        seed=config["seed"],
    log:
        "logs/gradcam_maps/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/gradcam_maps/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        model="|".join(IMAGE_MODELS) or "(?!)",
        strategy="|".join(STRATEGIES),
        seed=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/gradcam_maps.py"


rule fairness_report:
    input:
        predictions=run_files(PREDICTIONS),
        group_metrics=run_files(FAIRNESS_TABLE.format(table="group_metrics")),
        class_disparities=run_files(FAIRNESS_TABLE.format(table="class_disparities")),
        summary=run_files(FAIRNESS_TABLE.format(table="summary")),
        comparison="results/fairness/comparison.parquet",
        classifier_report=rules.group_labels.output.report,
        composition_plot=rules.group_labels.output.composition_plot,
        audit=rules.audit_dataset.output.metrics,
        audit_plot=rules.audit_dataset.output.plot,
        gradcam=[GRADCAM_MAP.format(**run) for run in GRADCAM_RUNS],
        modality_comparison=(
            ["results/fairness/modality_comparison.parquet"] if AUDIOVISUAL else []
        ),
        crowd_accuracy=["results/fairness/crowd_accuracy.parquet"] if AUDIOVISUAL else [],
        modules=package_modules("fairness_report"),
    output:
        report="results/report/fairness_report.html",
        figures=directory("results/report/figures"),
    params:
        attributes=config["fairness"]["attributes"],
        settings={
            "dataset": config["dataset_name"] or EMOTION_DATASET,
            "baseline": BASELINE,
            "min_group_size": config["fairness"]["min_group_size"],
            "uncertainty": config["fairness"]["uncertainty"],
        },
    log:
        "logs/fairness_report.log",
    benchmark:
        "logs/benchmarks/fairness_report.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/fairness_report.py"
