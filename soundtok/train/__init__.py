"""Training recipes. Models hold no optimiser: each recipe builds the model from its config, trains it with
``accelerate`` (one CPU process, several CPU processes, or GPUs, same command), checkpoints regularly, resumes
after a crash, and exports a soundtok checkpoint folder at the end."""
