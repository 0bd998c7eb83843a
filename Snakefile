# LLaRA experiment grid: Wikipedia -> pre-training pairs -> adaptation {none, ebae, ebar, joint}
# -> fine-tuning -> per BEIR dataset encode / search / score -> results/tables/.
# This file only wires; the rules live in workflow/rules/, the logic in the llara package.

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/adapt.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        TABLES,
    default_target: True
