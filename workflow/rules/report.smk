# The user-facing result: the main table (systems x datasets, zero-shot and fine-tuned side by side, mean
# +/- 95% CI over seeds), deltas against `none` and against RepLLaMA per stage with paired tests and Holm correction, a chart,
# and the cost of each system (adaptation / fine-tuning hours, encoding throughput, NDCG@10 per hour).


rule tables:
    input:
        metrics=METRICS,
        benchmarks=COST_BENCHMARKS,
        encode_meta=ENCODE_META,
    output:
        csv=report("results/tables/long.csv", category="Tables"),
        parquet="results/tables/long.parquet",
        wide=report(MAIN_TABLE, category="Tables"),
        summary="results/tables/summary.csv",
        deltas_csv="results/tables/deltas.csv",
        deltas=report("results/tables/deltas.md", category="Tables"),
        per_seed="results/tables/deltas_per_seed.csv",
        png=report("results/tables/ndcg10.png", category="Charts"),
        cost_csv="results/tables/cost.csv",
        cost=report("results/tables/cost.md", category="Tables"),
    params:
        metric=METRIC_NAME,
        top_k=EVAL["top_k"],  # MS MARCO's recall column: the deepest cut-off the runs can tell
        code=code_version("tables"),
    resources:
        local_cores=1,
    conda:
        "../envs/llara.yaml"
    log:
        "logs/tables.log",
    shell:
        "python -m llara.tables --metrics {input.metrics} --benchmarks {input.benchmarks} "
        "--encode-meta {input.encode_meta} --metric {params.metric} --top-k {params.top_k} --output-dir results/tables > {log} 2>&1"

