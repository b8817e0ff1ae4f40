"""Keys issued until now carry CRC32 checksums: flag them, so that the gateway keeps accepting
them (by key id, from memory) while refusing every other CRC32-checksummed token unread.
New keys get keyed checksums and no flag."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_gwsec_burst_percent"),
    ]

    operations = [
        # Every existing row gets True (they all predate keyed checksums) ...
        migrations.AddField(
            model_name="apikey",
            name="legacy_checksum",
            field=models.BooleanField(default=True, editable=False),
        ),
        # ... and every row created from now on False.
        migrations.AlterField(
            model_name="apikey",
            name="legacy_checksum",
            field=models.BooleanField(default=False, editable=False),
        ),
    ]
