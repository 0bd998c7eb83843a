# Adaptation: one model per (prompt style, variant, seed). `none` passes the base model through (with the
# prompts' slot tokens added). The checkpoint's llara_prompt.json records the style and the variant's
# prompts (grid.prompts): fine-tuning and encoding read them from there, no rule repeats them.
# The seed wildcard is the adaptation seed.


rule adapt:
    input:
        adapt_inputs,
    output:
        model=directory("results/adapt/{style}/{variant}/seed{seed}/model"),
        job=job_record("adapt", LLARA),
    params:
        base=base_model_path(),
        train=lambda wc: "--train_file results/pairs/pairs.jsonl" if grid.variant(wc.variant).trains else "",
        prompts=adapt_prompts,  # the variant's prompts (grid.prompts), born here, read by every later stage
        args=flags(config.get("adapt", {})),
        code=code_version("adapt"),
    resources:
        launch=job_name(adapt_stage, "adapt"),  # none: the passthrough stage's job (no GPU)
        cluster_jobs=1,
    threads: threads_for(adapt_stage)
    conda:
        "../envs/llara.yaml"
    log:
        "logs/adapt/{style}/{variant}/seed{seed}.log",
    benchmark:
        benchmark("adapt", LLARA)
    shell:
        "OMP_NUM_THREADS={threads} {resources.launch} --record {output.job} -- python -m llara.adapt "
        "--model_name_or_path {params.base:q} {params.train} --variant {wildcards.variant} "
        "--prompt_style {wildcards.style} {params.prompts} --seed {wildcards.seed} --report_to none --save_strategy steps "
        "{params.args} --output_dir {output.model} > {log} 2>&1"
