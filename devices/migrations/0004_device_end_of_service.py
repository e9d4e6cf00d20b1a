from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("devices", "0003_enrolment"),
    ]

    operations = [
        migrations.RenameField(
            model_name="device",
            old_name="intended_end_of_service",
            new_name="end_of_service",
        ),
        migrations.AlterField(
            model_name="device",
            name="end_of_service",
            field=models.DateField(
                blank=True,
                help_text="Intended end of service: key sets should stay strong enough until then (keys.policy)",
                null=True,
            ),
        ),
    ]
