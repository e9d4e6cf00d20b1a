from tests.conftest import client_for


def test_the_owner_lists_its_device_and_the_stranger_gets_404(world):
    resp = client_for(world.owner_user).get("/api/v1/orgs/owner-sei/devices/")
    assert resp.status_code == 200, resp.content
    assert [d["serial"] for d in resp.json()["results"]] == ["MTR-0001"]
    assert client_for(world.stranger_user).get("/api/v1/orgs/owner-sei/devices/").status_code == 404
