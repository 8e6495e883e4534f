rule gradcam_maps:
    input:
        checkpoint=rules.train_model.output.checkpoint,
        predictions=rules.train_model.output.predictions,
        manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        modules=package_modules("gradcam_maps"),
    output:
        GRADCAM_MAP,
    params:
        gradcam=config["report"]["gradcam"],
        seed=config["seed"],
    log:
        "logs/gradcam_maps/{strategy}.log",
    benchmark:
        "logs/benchmarks/gradcam_maps/{strategy}.tsv"
    wildcard_constraints:
        strategy="|".join(STRATEGIES),
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
        predictions=expand(PREDICTIONS, strategy=STRATEGIES),
        group_metrics=expand(
            "results/fairness/{strategy}/group_metrics.parquet", strategy=STRATEGIES
        ),
        class_disparities=expand(
            "results/fairness/{strategy}/class_disparities.parquet", strategy=STRATEGIES
        ),
        summary=expand("results/fairness/{strategy}/summary.parquet", strategy=STRATEGIES),
        comparison="results/fairness/comparison.parquet",
        classifier_report=rules.match_race_labels.output.report,
        composition_plot=rules.match_race_labels.output.composition_plot,
        gradcam=expand(GRADCAM_MAP, strategy=STRATEGIES),
        modules=package_modules("fairness_report"),
    output:
        report="results/report/fairness_report.html",
        figures=directory("results/report/figures"),
    params:
        attributes=config["fairness"]["attributes"],
        settings={
            "dataset": EMOTION_DATASET,
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
