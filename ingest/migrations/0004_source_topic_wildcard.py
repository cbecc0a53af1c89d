from django.db import migrations, models

EVERY_TOPIC = "*"


def empty_topics_to_wildcard(apps, schema_editor):
    """Empty allowed topics meant every topic; they mean none from now on, so write "*"."""
    Source = apps.get_model("ingest", "Source")
    for source in Source.objects.all():
        if not source.allowed_topics.replace(",", " ").split():
            source.allowed_topics = EVERY_TOPIC
            source.save(update_fields=["allowed_topics"])


def wildcard_to_empty_topics(apps, schema_editor):
    Source = apps.get_model("ingest", "Source")
    Source.objects.filter(allowed_topics=EVERY_TOPIC).update(allowed_topics="")


class Migration(migrations.Migration):

    dependencies = [
        ('ingest', '0003_per_record_outcomes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='source',
            name='allowed_topics',
            field=models.TextField(blank=True, help_text='topic names separated by commas or spaces; "*" allows every topic, empty allows none'),
        ),
        migrations.RunPython(empty_topics_to_wildcard, wildcard_to_empty_topics),
    ]
