"""The Viewer, Operator and Risk groups (services.roles_setup; `manage.py setuproles` re-applies them)."""
from django.contrib.auth.management import create_permissions
from django.db import migrations


def setup_roles(apps, schema_editor):
    from trading.services import _roles_setup

    # Permissions are normally created after migrate (post_migrate): create them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    _roles_setup(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [
        ("trading", "0002_audit_append_only"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(setup_roles, migrations.RunPython.noop)]
