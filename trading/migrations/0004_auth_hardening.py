"""API tokens expire; failed authentications are counted per (kind, source, window) (issue 13)."""
from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def give_existing_tokens_an_expiry(apps, schema_editor):
    """A token made before expiry existed lasts the default from the upgrade on: it neither
    dies at once nor lives for ever."""
    ApiToken = apps.get_model("trading", "ApiToken")
    days = getattr(settings, "FORESIGHT_TOKEN_DEFAULT_DAYS", 30)
    ApiToken.objects.filter(expires_at__isnull=True).update(expires_at=timezone.now() + timedelta(days=days))


class Migration(migrations.Migration):
    dependencies = [("trading", "0003_roles")]

    operations = [
        migrations.AddField(model_name="apitoken", name="expires_at", field=models.DateTimeField(null=True)),
        migrations.RunPython(give_existing_tokens_an_expiry, migrations.RunPython.noop),
        migrations.AlterField(model_name="apitoken", name="expires_at", field=models.DateTimeField()),
        migrations.CreateModel(
            name="AuthFailure",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("kind", models.CharField(choices=[("login", "wrong password"), ("token", "bad API token"),
                                                   ("lockout", "locked out")], max_length=16)),
                ("source", models.CharField(max_length=64)),
                ("window_start", models.DateTimeField(db_index=True)),
                ("count", models.PositiveIntegerField(default=0)),
                ("last_at", models.DateTimeField()),
                ("last_detail", models.CharField(blank=True, default="", max_length=150,
                                                 help_text="the last username tried, or the token's prefix")),
            ],
            options={"ordering": ["-window_start", "kind", "source"]},
        ),
        migrations.AddConstraint(
            model_name="authfailure",
            constraint=models.UniqueConstraint(fields=("kind", "source", "window_start"),
                                               name="auth_failure_one_row_per_window"),
        ),
    ]
