"""``s2dc study``: does pretraining pay off? Pretrain each method, then linear-probe and fine-tune with K
labelled cases, evaluate on held-out cases, and tabulate (see `S2DCCore.study.runner`)."""
