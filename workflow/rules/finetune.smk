# Fine-tuning data (mined negatives when taken from a BEIR train split) and contrastive fine-tuning.

rule mine_negatives:
    input:
        lambda wc: beir_inputs(wc),
    output:
        "results/finetune_data/{dataset}-{split}.jsonl",
    params:
        beir=lambda wc: beir_dir(wc.dataset),
        args=flags(
            {k: config["finetune"]["data"].get(k) for k in ("negatives", "num_negs", "depth", "seed")}, dash=True
        ),
        code=code_version("mine"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/mine_negatives/{dataset}-{split}.log",
    shell:
        "python -m llara.mine --beir-dir {params.beir:q} --split {wildcards.split} {params.args} "
        "--output {output} > {log} 2>&1"


rule hf_pairs:
    output:
        "resources/finetune/hf-train.jsonl",
    params:
        name=config["finetune"]["data"].get("hf_name"),
        args=flags({"max_rows": config["finetune"]["data"].get("max_rows")}, dash=True),
        code=code_version("hfpairs"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/hf_pairs.log",
    shell:
        "python -m llara.hfpairs --dataset {params.name:q} {params.args} --output {output} > {log} 2>&1"


rule finetune:
    input:
        model="results/adapt/{style}/{variant}/seed{seed}/model",
        train=finetune_train_file(),
    output:
        model=directory("results/finetune/{style}/{variant}/seed{seed}/model"),
        job=job_record("finetune", LLARA),
    params:
        args=flags(config["finetune"], skip=("data",)),
        # the variant's prompt kinds (grid.prompts): only slot tokens its adaptation trained
        prompts=lambda wc: "--query_prompt {query} --passage_prompt {passage}".format(**prompt_of(wc.variant)),
        code=code_version("finetune"),
    resources:
        launch=job_name("finetune"),
    threads: threads_for("finetune")
    conda:
        "../envs/llara.yaml"
    log:
        "logs/finetune/{style}/{variant}/seed{seed}.log",
    benchmark:
        benchmark("finetune", LLARA)
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.finetune "
        "--model_name_or_path {input.model} --train_file {input.train} --prompt_style {wildcards.style} "
        "{params.prompts} --seed {wildcards.seed} --report_to none --save_strategy steps {params.args} "
        "--output_dir {output.model} > {log} 2>&1"
