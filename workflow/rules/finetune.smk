# Fine-tuning data and contrastive fine-tuning. The negatives are an axis (finetune.data.negatives):
# results/finetune/{style}/{variant}/seed{seed}/{negatives}/model. The seed wildcard is the fine-tuning
# seed and the seed negatives are sampled with; see common.smk (finetune_train_file) for the files.
MINE_ARGS = flags({k: DATA.get(k) for k in ("num_negs", "depth")}, dash=True)


rule mine_bm25:
    input:
        mine_source,
    output:
        f"results/finetune_data/bm25/seed{{seed}}/{TRAIN}.jsonl",
    params:
        source=mine_source_args(),
        args=MINE_ARGS,
        code=code_version("mine"),
    resources:
        launch=job_name("mine"),
        cluster_jobs=1,
    threads: threads_for("mine")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/mine/bm25/seed{{seed}}/{TRAIN}.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.mine {params.source} --negatives bm25 {params.args} --seed {wildcards.seed} "
        "--output {output} > {log} 2>&1"


rule no_negatives:
    input:
        mine_source,
    output:
        f"results/finetune_data/none/{TRAIN}.jsonl",
    params:
        source=mine_source_args(),
        code=code_version("mine"),
    resources:
        launch=job_name("mine"),
        cluster_jobs=1,
    threads: threads_for("mine")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/mine/none/{TRAIN}.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.mine {params.source} --negatives none --output {output} > {log} 2>&1"


# dense: the train split's queries searched with the variant's adapted checkpoint (its zero-shot
# encoding of the corpus is the one the evaluation uses), negatives sampled from that run
rule mine_dense:
    input:
        mine_source,
        run=f"results/runs/{LLARA}/zeroshot/{TRAIN_DATASET}/{TRAIN_SPLIT}.trec",
    output:
        f"results/finetune_data/dense/{LLARA}/{TRAIN}.jsonl",
    params:
        source=mine_source_args(),
        args=MINE_ARGS,
        code=code_version("mine"),
    resources:
        launch=job_name("mine"),
        cluster_jobs=1,
    threads: threads_for("mine")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/mine/dense/{LLARA}/{TRAIN}.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.mine {params.source} --negatives run --run {input.run} {params.args} "
        "--seed {wildcards.seed} --output {output} > {log} 2>&1"


# dense with a named encoder (finetune.data.dense_encoder: a key of evaluate.baselines.hf)
use rule mine_dense as mine_dense_encoder with:
    input:
        mine_source,
        run=f"results/runs/baseline/{{encoder}}/{TRAIN_DATASET}/{TRAIN_SPLIT}.trec",
    output:
        f"results/finetune_data/dense/baseline/{{encoder}}/seed{{seed}}/{TRAIN}.jsonl",
    log:
        f"logs/mine/dense/baseline/{{encoder}}/seed{{seed}}/{TRAIN}.log",


rule hf_pairs:
    output:
        "resources/finetune/hf-train.jsonl",
    params:
        name=DATA.get("hf_name"),
        args=flags({"max_rows": DATA.get("max_rows")}, dash=True),
        code=code_version("hfpairs"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/hf_pairs.log",
    shell:
        "python -m llara.hfpairs --dataset {params.name:q} {params.args} --output {output} > {log} 2>&1"


rule finetune:
    input:
        model="results/adapt/{style}/{variant}/seed{seed}/model",
        train=finetune_train_file,
    output:
        model=directory("results/finetune/{style}/{variant}/seed{seed}/{negatives}/model"),
        job=job_record("finetune", LLARA, "finetuned", "{negatives}"),
    params:
        args=flags(config.get("finetune", {}), skip=("data", "group_size")),
        group_size=group_size,  # negatives `none`: 1 (the positive; in-batch negatives only)
        code=code_version("finetune"),
    resources:
        launch=job_name("finetune"),
        cluster_jobs=1,
    threads: threads_for("finetune")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/finetune/{style}/{variant}/seed{seed}/{negatives}.log",
    benchmark:
        benchmark("finetune", LLARA, "finetuned", "{negatives}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.finetune "
        "--model_name_or_path {input.model} --train_file {input.train} --seed {wildcards.seed} --report_to none --save_strategy steps {params.args} "
        "--group_size {params.group_size} --output_dir {output.model} > {log} 2>&1"


# a sentence-transformers folder beside each fine-tuned checkpoint (no weights: it loads ../model)
rule export_st:
    input:
        "results/finetune/{style}/{variant}/seed{seed}/{negatives}/model",
    output:
        directory("results/finetune/{style}/{variant}/seed{seed}/{negatives}/model-st"),
    params:
        code=code_version("st"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/export_st/{style}/{variant}/seed{seed}/{negatives}.log",
    shell:
        "python -m llara.st --model {input} --output {output} --reference --overwrite > {log} 2>&1"
