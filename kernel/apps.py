from django.apps import AppConfig


class KernelConfig(AppConfig):
    """Registers the kernel's management commands (runkernel, kernelctl); it has no models."""

    name = "kernel"
    verbose_name = "Execution kernel"
