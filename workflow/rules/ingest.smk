rule download_fairface:
    output:
        archive="resources/downloads/fairface.zip",
        images=directory("resources/fairface/images"),
    params:
        url=config["datasets"]["fairface"]["archive"]["url"],
        sha256=config["datasets"]["fairface"]["archive"]["sha256"],
    log:
        "logs/download_fairface.log",
    benchmark:
        "logs/benchmarks/download_fairface.tsv"
    localrule: True
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/download_fairface.py"


rule ingest_fairface:
    input:
        images=rules.download_fairface.output.images,
        labels=config["datasets"]["fairface"]["labels"].values(),
    output:
        manifest="results/manifests/fairface.parquet",
        report="results/manifests/fairface_report.json",
        rejects="results/manifests/fairface_rejects.parquet",
    params:
        labels=config["datasets"]["fairface"]["labels"],
        sample=config["datasets"]["fairface"]["sample"],
        seed=config["seed"],
    log:
        "logs/ingest_fairface.log",
    benchmark:
        "logs/benchmarks/ingest_fairface.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_fairface.py"


rule ingest_ferplus:
    input:
        root=config["datasets"]["ferplus"]["path"],
    output:
        manifest="results/manifests/ferplus.parquet",
        report="results/manifests/ferplus_report.json",
        rejects="results/manifests/ferplus_rejects.parquet",
    params:
        sample=config["datasets"]["ferplus"]["sample"],
        vote_source=config["datasets"]["ferplus"]["vote_source"],
        seed=config["seed"],
    log:
        "logs/ingest_ferplus.log",
    benchmark:
        "logs/benchmarks/ingest_ferplus.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_ferplus.py"


rule ingest_rafdb:
    input:
        root=config["datasets"]["rafdb"]["path"],
    output:
        manifest="results/manifests/rafdb.parquet",
        report="results/manifests/rafdb_report.json",
        rejects="results/manifests/rafdb_rejects.parquet",
    params:
        rafdb=config["datasets"]["rafdb"],
        seed=config["seed"],
    log:
        "logs/ingest_rafdb.log",
    benchmark:
        "logs/benchmarks/ingest_rafdb.tsv"
    resources:
        mem_mb=4000,
        runtime=20,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/ingest_rafdb.py"
