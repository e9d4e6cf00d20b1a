"""``/api/v1/`` routes. Every tenant route starts with ``orgs/<org>/``: the acting organisation is
always explicit."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from campaigns import api as campaigns_api
from devices import api as devices_api
from jobs import api as jobs_api
from keys import api_ca as ca_api
from keys import api_sessionkeys as sessionkeys_api
from notifications import api as notifications_api
from switches import api as switches_api
from tenants import api as tenants_api

app_name = "api"

ORG = "orgs/<slug:org>/"

urlpatterns = [
    path("auth/token/", tenants_api.TokenView.as_view(), name="auth-token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
    path("applications/", tenants_api.ApplicationListView.as_view(), name="application-list"),
    path("applications/<str:pk>/", tenants_api.ApplicationDetailView.as_view(), name="application-detail"),
    path(
        "applications/<str:pk>/approve/",
        tenants_api.ApplicationApproveView.as_view(),
        name="application-approve",
    ),
    path(
        "applications/<str:pk>/reject/",
        tenants_api.ApplicationRejectView.as_view(),
        name="application-reject",
    ),
    path("invitations/accept/", tenants_api.InvitationAcceptView.as_view(), name="invitation-accept"),
    path("orgs/", tenants_api.MyOrganisationsView.as_view(), name="org-list"),
    path(ORG, tenants_api.OrganisationDetailView.as_view(), name="org-detail"),
    path(ORG + "members/", tenants_api.MemberListView.as_view(), name="member-list"),
    path(ORG + "members/<uuid:pk>/", tenants_api.MemberDetailView.as_view(), name="member-detail"),
    path(ORG + "invitations/", tenants_api.InvitationListView.as_view(), name="invitation-list"),
    path(
        ORG + "invitations/<uuid:pk>/", tenants_api.InvitationDetailView.as_view(), name="invitation-detail"
    ),
    path(
        ORG + "invitations/<uuid:pk>/revoke/",
        tenants_api.InvitationRevokeView.as_view(),
        name="invitation-revoke",
    ),
    path(ORG + "mandates/", tenants_api.MandateListView.as_view(), name="mandate-list"),
    path(ORG + "mandates/<uuid:pk>/", tenants_api.MandateDetailView.as_view(), name="mandate-detail"),
    path(ORG + "mandates/<uuid:pk>/revoke/", tenants_api.MandateRevokeView.as_view(), name="mandate-revoke"),
    path(ORG + "contracts/", tenants_api.ContractListView.as_view(), name="contract-list"),
    path(ORG + "contracts/<uuid:pk>/", tenants_api.ContractDetailView.as_view(), name="contract-detail"),
    path(ORG + "consents/", tenants_api.ConsentListView.as_view(), name="consent-list"),
    path(ORG + "consents/<uuid:pk>/", tenants_api.ConsentDetailView.as_view(), name="consent-detail"),
    path(
        ORG + "consents/<uuid:pk>/approve/", tenants_api.ConsentApproveView.as_view(), name="consent-approve"
    ),
    path(ORG + "consents/<uuid:pk>/deny/", tenants_api.ConsentDenyView.as_view(), name="consent-deny"),
    path(ORG + "consents/<uuid:pk>/revoke/", tenants_api.ConsentRevokeView.as_view(), name="consent-revoke"),
    path(
        ORG + "consents/<uuid:pk>/history/", tenants_api.ConsentHistoryView.as_view(), name="consent-history"
    ),
    path(
        ORG + "consents/<uuid:pk>/receipt/", tenants_api.ConsentReceiptView.as_view(), name="consent-receipt"
    ),
    path("consent-receipts/key/", tenants_api.ConsentReceiptKeyView.as_view(), name="consent-receipt-key"),
    path(ORG + "devices/", devices_api.DeviceListView.as_view(), name="device-list"),
    path(ORG + "devices/batch/", devices_api.DeviceBatchView.as_view(), name="device-batch"),
    path(ORG + "devices/<uuid:pk>/", devices_api.DeviceDetailView.as_view(), name="device-detail"),
    path(ORG + "devices/<uuid:pk>/suspend/", devices_api.DeviceSuspendView.as_view(), name="device-suspend"),
    path(
        ORG + "devices/<uuid:pk>/reactivate/",
        devices_api.DeviceReactivateView.as_view(),
        name="device-reactivate",
    ),
    path(ORG + "secure-elements/", devices_api.SecureElementListView.as_view(), name="secure-element-list"),
    path(
        ORG + "secure-elements/batch/",
        devices_api.SecureElementBatchView.as_view(),
        name="secure-element-batch",
    ),
    path(
        ORG + "secure-elements/<uuid:pk>/",
        devices_api.SecureElementDetailView.as_view(),
        name="secure-element-detail",
    ),
    path(
        ORG + "security-domains/", devices_api.SecurityDomainListView.as_view(), name="security-domain-list"
    ),
    path(
        ORG + "security-domains/<uuid:pk>/",
        devices_api.SecurityDomainDetailView.as_view(),
        name="security-domain-detail",
    ),
    path(
        ORG + "security-domains/<uuid:pk>/master-key/",
        sessionkeys_api.MasterKeyView.as_view(),
        name="security-domain-master-key",
    ),
    path(
        ORG + "security-domains/<uuid:pk>/session-keys/",
        sessionkeys_api.SessionKeyView.as_view(),
        name="security-domain-session-keys",
    ),
    path(ORG + "key-sets/", devices_api.KeySetListView.as_view(), name="key-set-list"),
    path(ORG + "devices/<uuid:pk>/jobs/", jobs_api.DeviceJobsView.as_view(), name="device-jobs"),
    path(ORG + "jobs/", jobs_api.JobListView.as_view(), name="job-list"),
    path(ORG + "jobs/<uuid:pk>/", jobs_api.JobDetailView.as_view(), name="job-detail"),
    path(ORG + "jobs/<uuid:pk>/cancel/", jobs_api.JobCancelView.as_view(), name="job-cancel"),
    path(ORG + "jobs/<uuid:pk>/input/", jobs_api.JobInputView.as_view(), name="job-input"),
    path(ORG + "supply-batches/", devices_api.SupplyBatchView.as_view(), name="supply-batch"),
    path(ORG + "import-keys/", devices_api.ImportKeyListView.as_view(), name="import-key-list"),
    path(ORG + "import-keys/retire/", devices_api.ImportKeyRetireView.as_view(), name="import-key-retire"),
    path(
        "import-keys/<slug:issuer>/",
        devices_api.PublishedImportKeyView.as_view(),
        name="import-key-published",
    ),
    path(ORG + "certificates/", ca_api.CertificateListView.as_view(), name="certificate-list"),
    path(ORG + "certificates/csr/", ca_api.CertificateRequestView.as_view(), name="certificate-csr"),
    path(ORG + "certificates/<uuid:pk>/", ca_api.CertificateDetailView.as_view(), name="certificate-detail"),
    path(
        ORG + "certificates/<uuid:pk>/revoke/",
        ca_api.CertificateRevokeView.as_view(),
        name="certificate-revoke",
    ),
    path(
        ORG + "secure-elements/<uuid:pk>/casd-certificate/",
        ca_api.SecureElementCasdCertificateView.as_view(),
        name="secure-element-casd-certificate",
    ),
    path("ca/", ca_api.CAListView.as_view(), name="ca-list"),
    path("ca/<uuid:pk>/root/", ca_api.CARootView.as_view(), name="ca-root"),
    path("ca/<uuid:pk>/crl/", ca_api.CACrlView.as_view(), name="ca-crl"),
    path(ORG + "audit/", tenants_api.AuditListView.as_view(), name="audit-list"),
    path(ORG + "audit/<str:pk>/", tenants_api.AuditDetailView.as_view(), name="audit-detail"),
    path(ORG + "webhooks/", notifications_api.WebhookListView.as_view(), name="webhook-list"),
    path(ORG + "webhooks/<uuid:pk>/", notifications_api.WebhookDetailView.as_view(), name="webhook-detail"),
    path(ORG + "webhooks/<uuid:pk>/test/", notifications_api.WebhookTestView.as_view(), name="webhook-test"),
    path(
        ORG + "webhooks/<uuid:pk>/deliveries/",
        notifications_api.WebhookDeliveryListView.as_view(),
        name="webhook-deliveries",
    ),
    path(
        ORG + "webhooks/<uuid:pk>/rotate-secret/",
        notifications_api.WebhookRotateSecretView.as_view(),
        name="webhook-rotate-secret",
    ),
    path(ORG + "switches/", switches_api.SwitchListView.as_view(), name="switch-list"),
    path(ORG + "switches/<uuid:pk>/", switches_api.SwitchDetailView.as_view(), name="switch-detail"),
    path(ORG + "campaigns/", campaigns_api.CampaignListView.as_view(), name="campaign-list"),
    path(ORG + "campaigns/<uuid:pk>/", campaigns_api.CampaignDetailView.as_view(), name="campaign-detail"),
    path(ORG + "campaigns/<uuid:pk>/start/", campaigns_api.CampaignStartView.as_view(), name="campaign-start"),
    path(ORG + "campaigns/<uuid:pk>/pause/", campaigns_api.CampaignPauseView.as_view(), name="campaign-pause"),
    path(ORG + "campaigns/<uuid:pk>/resume/", campaigns_api.CampaignResumeView.as_view(), name="campaign-resume"),
    path(ORG + "campaigns/<uuid:pk>/cancel/", campaigns_api.CampaignCancelView.as_view(), name="campaign-cancel"),
    path(ORG + "campaigns/<uuid:pk>/targets/", campaigns_api.CampaignTargetsView.as_view(), name="campaign-targets"),
]
