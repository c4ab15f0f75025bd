"""Console models: kernels, slots and their configs, control commands, audit events,
and mirrors of kernel status and positions. Placeholder until the models land."""
