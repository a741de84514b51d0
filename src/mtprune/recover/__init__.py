"""Recovery of pruned models: fine-tuning (SFT and logit distillation), local healing, and
sequence-level distillation data (teacher translations)."""
