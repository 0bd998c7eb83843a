# The user-facing result: tidy and wide tables, deltas against `none` with significance, a chart, and
# the cost of each system (adaptation / fine-tuning hours, encoding throughput, NDCG@10 per hour).


rule tables:
    input:
        metrics=METRICS,
        benchmarks=COST_BENCHMARKS,
        encode_meta=ENCODE_META,
    output:
        csv=report("results/tables/long.csv", category="Tables"),
        parquet="results/tables/long.parquet",
        wide=report("results/tables/ndcg10.md", category="Tables"),
        deltas_csv="results/tables/deltas.csv",
        deltas=report("results/tables/deltas.md", category="Tables"),
        png=report("results/tables/ndcg10.png", category="Charts"),
        cost_csv="results/tables/cost.csv",
        cost=report("results/tables/cost.md", category="Tables"),
    params:
        code=code_version("tables"),
    conda:
        "../envs/llara.yaml"
    log:
        "logs/tables.log",
    shell:
        "python -m llara.tables --metrics {input.metrics} --benchmarks {input.benchmarks} "
        "--encode-meta {input.encode_meta} --output-dir results/tables > {log} 2>&1 && cat {log}"
