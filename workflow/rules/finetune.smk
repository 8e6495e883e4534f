# Optional: FaceNet fine-tuned on FairFace train, used when race_matching.embedder is finetuned.


rule finetune_facenet:
    input:
        aligned=shard_files(ALIGNED_SHARD, "fairface"),
        manifest="results/manifests/fairface.parquet",
        weights=facenet_state_dict(),
        modules=package_modules("finetune_facenet"),
    output:
        checkpoint="results/finetune/facenet_multitask.pt",
        history="results/finetune/history.csv",
        roles="results/finetune/roles.parquet",
        report="results/finetune/report.json",
    params:
        finetune=config["finetune"],
        weights=config["embedding"]["weights"],
        seed=config["seed"],
    log:
        "logs/finetune_facenet.log",
    benchmark:
        "logs/benchmarks/finetune_facenet.tsv"
    threads: config["finetune"]["threads"]
    resources:
        mem_mb=finetune_mem_mb,
        runtime=retry_scaled(600),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/finetune_facenet.py"


rule embed_faces_finetuned:
    input:
        aligned=rules.align_faces.output.aligned,
        checkpoint=rules.finetune_facenet.output.checkpoint,
        modules=package_modules("embed_faces_finetuned"),
    output:
        embeddings="results/embeddings_finetuned/{dataset}/shard-{shard}.parquet",
    params:
        batch_size=config["embedding"]["batch_size"],
        loader_workers=config["embedding"]["loader_workers"],
        device=config["embedding"]["device"],
        precision=config["embedding"]["precision"],
    log:
        "logs/embed_faces_finetuned/{dataset}/shard-{shard}.log",
    benchmark:
        "logs/benchmarks/embed_faces_finetuned/{dataset}/shard-{shard}.tsv"
    wildcard_constraints:
        dataset="|".join(DATASETS),
        shard=r"\d+",
    threads: 1
    resources:
        mem_mb=retry_scaled(3000),
        runtime=retry_scaled(60),
    conda:
        "../../envs/fairfer.yaml"
    script:
        "../../scripts/embed_faces_finetuned.py"
