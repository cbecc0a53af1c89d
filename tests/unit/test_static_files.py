"""The admin's static files, served by the gateway itself (ingestsite/urls.py)."""


def test_admin_assets_are_served_without_a_cdn(client):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")
    assert client.get("/static/admin/css/missing.css").status_code == 404
    outside = client.get("/static/../ingestsite/settings.py")
    assert outside.status_code in (400, 404) and b"SECRET_KEY" not in outside.content
