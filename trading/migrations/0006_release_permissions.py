"""Releases (issue 11): promoting a canary or shadow version to every slot, and a reload on
every kernel of the fleet at once, each a permission of its own; both go to the Risk role
(services.roles: an Operator may canary and shadow, Risk promotes and deploys fleet-wide)."""
from django.contrib.auth.management import create_permissions
from django.db import migrations

KERNEL_PERMISSIONS = [
    ("operate_kernel", "Can start, stop, pause, resume, reload and use slot controls"),
    ("engage_halt", "Can engage the emergency halt"),
    ("release_halt", "Can release a halt"),
    ("rollback_strategy", "Can roll a strategy back to its previous version"),
    ("promote_strategy", "Can promote a canary or shadow version to every slot of a strategy"),
    ("deploy_fleet", "Can reload a strategy on every kernel of the fleet at once"),
]


def setup_roles(apps, schema_editor):
    from trading.services import _roles_setup

    # Permissions are normally created after migrate (post_migrate): create them now.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    _roles_setup(apps.get_model("auth", "Group"), apps.get_model("auth", "Permission"))


class Migration(migrations.Migration):
    dependencies = [("trading", "0005_audit_chain")]

    operations = [
        migrations.AlterModelOptions(name="kernel", options={"ordering": ["name"], "permissions": KERNEL_PERMISSIONS}),
        migrations.RunPython(setup_roles, migrations.RunPython.noop),
    ]
