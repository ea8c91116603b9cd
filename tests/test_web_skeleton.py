"""The app factory serves a page and a health check."""

from acai_omr import create_app


def test_index_page_is_served():
    client = create_app({"TESTING": True}).test_client()
    response = client.get("/")
    assert response.status_code == 200
    assert b"Acai OMR" in response.data


def test_health_check_reports_ok():
    client = create_app({"TESTING": True}).test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
