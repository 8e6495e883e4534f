# Auditing a model fairfer did not train (audit.models): a predictions file, or a TorchScript
# or ONNX model run on the emotion dataset's images. Its predictions are a run like any other
# (strategy baseline, seed 0): fairness tables, the strategy comparison (with the
# post-processing strategies), the report and metrics.json take them as they are.


rule audit_model:
    input:
        manifest=f"results/manifests/{EMOTION_DATASET}.parquet",
        group_labels=rules.group_labels.output.labels,
        aligned=audited_crops,
        files=audited_files,
        modules=package_modules("audit_model"),
    output:
        predictions=PREDICTIONS,
        valid_predictions=VALID_PREDICTIONS,
        report="results/models/{model}/{strategy}/seed-{seed}/audit.json",
    params:
        settings=lambda wildcards: config["audit"]["models"][wildcards.model],
    log:
        "logs/audit_model/{model}/{strategy}/seed-{seed}.log",
    benchmark:
        "logs/benchmarks/audit_model/{model}/{strategy}/seed-{seed}.tsv"
    wildcard_constraints:
        model="|".join(AUDITED_MODELS) or "(?!)",
        strategy=BASELINE,
        seed="0",
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(30),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/audit_model.py"
