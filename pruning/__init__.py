"""PGB (Permutation and Grouping for BERT): one-shot semi-structured pruning.

The steps of the paper, one module each, in the order data flows through them:

    importance.score        dense model + batches   -> Scores (saliency per weight)
    budget.plan_pgb         Scores + target ratio   -> Plan (G and permutations per matrix)
    neurons.keep_neurons    Plan + Scores           -> Plan + masks, each FFN as whole neurons
                            (pgb-prune's default; --ffn groups keeps the paper's grouped FFN)
    repermute.apply_plan    model + Plan            -> pruned model (masked dense weights)
    compensation.compensate model + masks + batches -> compensated weights
    finetune.finetune       model + masks + batches -> re-finetuned model, structure frozen
                            (distillation: the dense model as teacher, optional)

`ablations` builds the baselines of PGB.md section 9, `grouped` the inference module of
Algorithm 3, `cost` the parameter and FLOP counts every report uses.
"""
