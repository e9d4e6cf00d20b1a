# Run by the e2e stack through ``manage.py shell -c``: the organisations, their owners and the
# mandates of the scenario (the API has no endpoint to create organisations).
from django.contrib.auth import get_user_model

from keys.ca import ca_create
from tenants.access import Actor
from tenants.models import Mandate, MemberRole, Membership, Organisation, OrgRole, OrgStatus

PASSWORD = "e2e-password-0123456789"
ORGS = {
    "sei": ("SE Issuer", [OrgRole.SE_ISSUER, OrgRole.DEVICE_MANUFACTURER]),
    "tsm": ("Trusted Service Manager", [OrgRole.TSM]),
    "supplier": ("Service Provider", [OrgRole.SERVICE_PROVIDER]),
    "stranger": ("Stranger", [OrgRole.SERVICE_PROVIDER]),
}
orgs = {}
for slug, (name, roles) in ORGS.items():
    org = Organisation.objects.create(
        slug=slug, name=name, roles=roles, status=OrgStatus.ACTIVE, contact_email=f"{slug}@example.test"
    )
    user = get_user_model().objects.create_user(username=f"{slug}-owner", password=PASSWORD)
    Membership.objects.create(org=org, user=user, role=MemberRole.OWNER)
    orgs[slug] = org
Mandate.objects.create(
    grantor=orgs["sei"],
    grantee=orgs["tsm"],
    actions=["devices.view", "sd.create", "sd.delete", "status.read"],
)
Mandate.objects.create(
    grantor=orgs["supplier"], grantee=orgs["tsm"], actions=["sd.create", "sd.delete", "keys.rotate"]
)

# The confidential key-loading flow (test_confidential_flow.py): an SE supplier named by the SE
# issuer, a Controlling Authority running the deployment's CA, a provider that mandates the TSM.

MORE = {
    "ses": ("SE Supplier", [OrgRole.SE_SUPPLIER]),
    "ca": ("Controlling Authority", [OrgRole.CONTROLLING_AUTHORITY]),
    "provider": ("New Provider", [OrgRole.SERVICE_PROVIDER]),
}
for slug, (name, roles) in MORE.items():
    org = Organisation.objects.create(
        slug=slug, name=name, roles=roles, status=OrgStatus.ACTIVE, contact_email=f"{slug}@example.test"
    )
    user = get_user_model().objects.create_user(username=f"{slug}-owner", password=PASSWORD)
    Membership.objects.create(org=org, user=user, role=MemberRole.OWNER)
    orgs[slug] = org
    if slug == "ca":
        ca_create(actor=Actor(user=user, org=org, member_role=MemberRole.OWNER), name="E2E Root CA")
Mandate.objects.create(grantor=orgs["sei"], grantee=orgs["ses"], actions=["se.supply"])
Mandate.objects.create(
    grantor=orgs["provider"], grantee=orgs["tsm"], actions=["sd.create", "sd.delete", "keys.load"]
)
