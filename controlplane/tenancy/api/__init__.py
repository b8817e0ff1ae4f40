"""REST API of this app: serializers and viewsets."""
