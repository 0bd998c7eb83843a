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


# dense: the train split's queries searched with a retriever (the system's zero-shot encoding of the
# corpus is the one the evaluation uses; or evaluate.baselines.hf.<finetune.data.dense_encoder>),
# negatives sampled from that run with the seed of the {miner} segment
rule mine_dense:
    input:
        mine_source,
        run=miner_run,
    output:
        f"results/finetune_data/dense/{{miner}}/{TRAIN}.jsonl",
    wildcard_constraints:
        miner=MINER_RE,
    params:
        source=mine_source_args(),
        args=MINE_ARGS,
        seed=miner_seed,
        code=code_version("mine"),
    resources:
        launch=job_name("mine"),
        cluster_jobs=1,
    threads: threads_for("mine")
    conda:
        "../envs/llara.yaml"
    log:
        f"logs/mine/dense/{{miner}}/{TRAIN}.log",
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} -- python -m llara.mine {params.source} --negatives run "
        "--run {input.run} {params.args} --seed {params.seed} --output {output} > {log} 2>&1"


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


# a retriever of grid.retrievers (RepLLaMA): the base model fine-tuned with the same recipe, data,
# negatives and seeds, no adaptation; its prefixes and pooling go into the output's llara_prompt.json
rule finetune_retriever:
    input:
        model=base_model_inputs,
        train=finetune_train_file,
    output:
        model=directory("results/finetune/retriever/{retriever}/seed{seed}/{negatives}/model"),
        job=job_record("finetune", "retriever/{retriever}/seed{seed}", "finetuned", "{negatives}"),
    params:
        base=base_model_path(),
        layout=retriever_layout,  # --pooling, --query_prefix, --passage_prefix, --append_eos
        args=flags(config.get("finetune", {}), skip=("data", "group_size")),
        group_size=group_size,
        code=code_version("finetune"),
    resources:
        launch=job_name("finetune"),
        cluster_jobs=1,
    threads: threads_for("finetune")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/finetune/retriever/{retriever}/seed{seed}/{negatives}.log",
    benchmark:
        benchmark("finetune", "retriever/{retriever}/seed{seed}", "finetuned", "{negatives}")
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.finetune "
        "--model_name_or_path {params.base:q} {params.layout} --train_file {input.train} --seed {wildcards.seed} "
        "--report_to none --save_strategy steps {params.args} --group_size {params.group_size} "
        "--output_dir {output.model} > {log} 2>&1"


# a sentence-transformers folder beside each fine-tuned checkpoint (no weights: it loads ../model)
rule export_st:
    input:
        "results/finetune/{trained}/{negatives}/model",
    output:
        directory("results/finetune/{trained}/{negatives}/model-st"),
    wildcard_constraints:
        trained=TRAINED_RE,
    params:
        # a LLaRA model: a folder that loads ../model (LlaraSTModule); a retriever: stock modules
        # (Transformer + Pooling(lasttoken) + Normalize), its weights merged in
        reference=lambda wc: "" if wc.trained.startswith("retriever/") else "--reference",
        code=code_version("st"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/export_st/{trained}/{negatives}.log",
    shell:
        "python -m llara.st --model {input} --output {output} {params.reference} --overwrite > {log} 2>&1"
