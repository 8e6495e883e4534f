rule render_fairface_domain:
    input:
        manifest="results/manifests/fairface.parquet",
        modules=package_modules("render_fairface_domain"),
    output:
        manifest=f"results/manifests/{DOMAIN_DATASET}.parquet",
    params:
        render=DOMAIN_RENDER,
        splits=DOMAIN_SPLITS,
        dataset=EMOTION_DATASET,
    log:
        "logs/render_fairface_domain.log",
    benchmark:
        "logs/benchmarks/render_fairface_domain.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(20),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/render_fairface_domain.py"


rule group_labels:
    input:
        reference=race_matching_embeddings("fairface"),
        reference_manifest="results/manifests/fairface.parquet",
        # FairFace rendered like the emotion dataset: the in-domain evaluation (and fit).
        domain=race_matching_embeddings(DOMAIN_DATASET),
        domain_manifest=f"results/manifests/{DOMAIN_DATASET}.parquet",
        target=race_matching_embeddings(EMOTION_DATASET),
        target_manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        # Labelled demographic datasets the classifiers are also evaluated on.
        external=[race_matching_embeddings(d) for d in EXTERNAL_REFERENCES],
        external_manifests=expand(
            "results/manifests/{dataset}.parquet", dataset=EXTERNAL_REFERENCES
        ),
        # Other emotion datasets the models are evaluated on: labelled by the same classifiers.
        evaluation=[race_matching_embeddings(d) for d in EVALUATION_DATASETS],
        evaluation_manifests=expand(
            "results/manifests/{dataset}.parquet", dataset=EVALUATION_DATASETS
        ),
        fit_subset=race_matching_fit_subset(),
        modules=package_modules("group_labels"),
    output:
        labels=f"results/group_labels/{EMOTION_DATASET}.parquet",
        evaluation_labels=expand(
            "results/group_labels/{dataset}.parquet", dataset=EVALUATION_DATASETS
        ),
        report="results/group_labels/classifier_report.json",
        per_class="results/group_labels/classifier_per_class.csv",
        composition="results/group_labels/composition.csv",
        composition_plot="results/group_labels/composition.png",
    params:
        matching=config["race_matching"],
        seed=config["seed"],
        dataset=EMOTION_DATASET,
        external_references=EXTERNAL_REFERENCES,
        evaluation_datasets=EVALUATION_DATASETS,
        domain_render=DOMAIN_RENDER,
        # Draws and level of the corrected composition's interval.
        uncertainty=config["fairness"]["uncertainty"],
    log:
        "logs/group_labels.log",
    benchmark:
        "logs/benchmarks/group_labels.tsv"
    threads: 2
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/group_labels.py"


rule audit_dataset:
    input:
        manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        group_labels=rules.group_labels.output.labels,
        modules=package_modules("audit_dataset"),
    output:
        metrics="results/audit/bias_metrics.csv",
        npmi="results/audit/npmi.csv",
        plot="results/audit/npmi.png",
    params:
        attributes=config["fairness"]["attributes"],
        # Posterior draws of the inferred labels (at most 100: the metrics move little more).
        draws=min(100, config["fairness"]["uncertainty"]["draws"]),
        level=config["fairness"]["uncertainty"]["level"],
        seed=config["seed"],
        dataset=config["dataset_name"] or EMOTION_DATASET,
    log:
        "logs/audit_dataset.log",
    benchmark:
        "logs/benchmarks/audit_dataset.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(2000),
        runtime=retry_scaled(20),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/audit_dataset.py"
