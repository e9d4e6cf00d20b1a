"""Server-rendered pages. Tenant pages live under ``/o/<org>/``; acting on behalf of a mandator
is explicit in the query string (``?on_behalf_of=<grantor>``)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from campaigns import views as campaign_views
from devices import views as device_views
from jobs import views as job_views
from keys import pages_ca
from notifications import views as webhook_views
from portal import demo_views, views
from switches import views as switch_views
from tenants import views as tenant_views

ORG = "o/<slug:org>/"

urlpatterns = [
    path("", views.HomeView.as_view(), name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("apply/", tenant_views.ApplyView.as_view(), name="apply"),
    path("operator/applications/", tenant_views.ApplicationsView.as_view(), name="operator-applications"),
    path(
        "operator/applications/<uuid:pk>/approve/",
        tenant_views.ApplicationDecideView.as_view(decision="approve"),
        name="operator-application-approve",
    ),
    path(
        "operator/applications/<uuid:pk>/reject/",
        tenant_views.ApplicationDecideView.as_view(decision="reject"),
        name="operator-application-reject",
    ),
    path("invitations/<str:token>/", tenant_views.InvitationAcceptView.as_view(), name="invitation-accept"),
    # The field stories' buttons (demo mode only: the views answer 404 unless DEBUG).
    path("demo/stories/", demo_views.StoriesView.as_view(), name="demo-stories"),
    path("demo/stories/<slug:story>/run/", demo_views.StoryStartView.as_view(), name="demo-story-start"),
    path("demo/stories/runs/<str:run_id>/", demo_views.StoryRunView.as_view(), name="demo-story-run"),
    path(ORG, views.DashboardView.as_view(), name="org-dashboard"),
    path(ORG + "members/", tenant_views.MembersView.as_view(), name="org-members"),
    path(ORG + "members/<uuid:pk>/role/", tenant_views.MemberRoleView.as_view(), name="org-member-role"),
    path(
        ORG + "members/<uuid:pk>/remove/", tenant_views.MemberRemoveView.as_view(), name="org-member-remove"
    ),
    path(
        ORG + "invitations/<uuid:pk>/revoke/",
        tenant_views.InvitationRevokeView.as_view(),
        name="org-invitation-revoke",
    ),
    path(ORG + "consents/", tenant_views.ConsentsView.as_view(), name="org-consents"),
    path(ORG + "consents/<uuid:pk>/", tenant_views.ConsentView.as_view(), name="org-consent"),
    path(
        ORG + "consents/<uuid:pk>/approve/",
        tenant_views.ConsentApproveView.as_view(),
        name="org-consent-approve",
    ),
    path(ORG + "consents/<uuid:pk>/deny/", tenant_views.ConsentDenyView.as_view(), name="org-consent-deny"),
    path(
        ORG + "consents/<uuid:pk>/revoke/",
        tenant_views.ConsentRevokeView.as_view(),
        name="org-consent-revoke",
    ),
    path(
        ORG + "consents/<uuid:pk>/receipt/",
        tenant_views.ConsentReceiptView.as_view(),
        name="org-consent-receipt",
    ),
    path(ORG + "contracts/", switch_views.ContractsView.as_view(), name="org-contracts"),
    path(ORG + "contracts/<uuid:pk>/", switch_views.ContractView.as_view(), name="org-contract"),
    path(
        ORG + "contracts/<uuid:pk>/switch/",
        switch_views.ContractSwitchView.as_view(),
        name="org-contract-switch",
    ),
    path(ORG + "switches/", switch_views.SwitchesView.as_view(), name="org-switches"),
    path(ORG + "switches/new/", switch_views.SwitchNewView.as_view(), name="org-switch-new"),
    path(ORG + "switches/<uuid:pk>/", switch_views.SwitchView.as_view(), name="org-switch"),
    path(ORG + "mandates/", tenant_views.MandatesView.as_view(), name="org-mandates"),
    path(
        ORG + "mandates/<uuid:pk>/revoke/",
        tenant_views.MandateRevokeView.as_view(),
        name="org-mandate-revoke",
    ),
    path(ORG + "devices/", device_views.DeviceListView.as_view(), name="org-devices"),
    path(ORG + "devices/<uuid:pk>/", device_views.DeviceDetailView.as_view(), name="org-device"),
    path(ORG + "devices/register/", device_views.DeviceRegisterView.as_view(), name="org-device-register"),
    path(ORG + "devices/batch/", device_views.DeviceBatchView.as_view(), name="org-device-batch"),
    path(
        ORG + "devices/<uuid:pk>/suspend/",
        device_views.DeviceSuspendView.as_view(),
        name="org-device-suspend",
    ),
    path(
        ORG + "devices/<uuid:pk>/reactivate/",
        device_views.DeviceReactivateView.as_view(),
        name="org-device-reactivate",
    ),
    path(
        ORG + "secure-elements/register/",
        device_views.SecureElementRegisterView.as_view(),
        name="org-se-register",
    ),
    path(ORG + "secure-elements/batch/", device_views.SecureElementBatchView.as_view(), name="org-se-batch"),
    path(ORG + "audit/", views.AuditView.as_view(), name="org-audit"),
    path(ORG + "certificates/", pages_ca.CertificateListPage.as_view(), name="org-certificates"),
    path(
        ORG + "certificates/request/",
        pages_ca.CertificateRequestPage.as_view(),
        name="org-certificate-request",
    ),
    path(ORG + "certificates/<uuid:pk>/", pages_ca.CertificateDetailPage.as_view(), name="org-certificate"),
    path(
        ORG + "certificates/<uuid:pk>/revoke/",
        pages_ca.CertificateRevokePage.as_view(),
        name="org-certificate-revoke",
    ),
    path(ORG + "devices/<uuid:pk>/jobs/", job_views.DeviceJobsView.as_view(), name="org-device-jobs"),
    path(
        ORG + "devices/<uuid:pk>/jobs/new/",
        job_views.DeviceJobRequestView.as_view(),
        name="org-device-job-new",
    ),
    path(ORG + "jobs/", job_views.JobListView.as_view(), name="org-jobs"),
    path(ORG + "jobs/<uuid:pk>/", job_views.JobDetailView.as_view(), name="org-job"),
    path(ORG + "jobs/<uuid:pk>/timeline/", job_views.JobTimelineView.as_view(), name="org-job-timeline"),
    path(ORG + "jobs/<uuid:pk>/cancel/", job_views.JobCancelView.as_view(), name="org-job-cancel"),
    path(ORG + "campaigns/", campaign_views.CampaignListPage.as_view(), name="org-campaigns"),
    path(ORG + "campaigns/<uuid:pk>/", campaign_views.CampaignDetailPage.as_view(), name="org-campaign"),
    path(
        ORG + "campaigns/<uuid:pk>/progress/",
        campaign_views.CampaignProgressPage.as_view(),
        name="org-campaign-progress",
    ),
    path(
        ORG + "campaigns/<uuid:pk>/start/",
        campaign_views.CampaignStartPage.as_view(),
        name="org-campaign-start",
    ),
    path(
        ORG + "campaigns/<uuid:pk>/pause/",
        campaign_views.CampaignPausePage.as_view(),
        name="org-campaign-pause",
    ),
    path(
        ORG + "campaigns/<uuid:pk>/resume/",
        campaign_views.CampaignResumePage.as_view(),
        name="org-campaign-resume",
    ),
    path(
        ORG + "campaigns/<uuid:pk>/cancel/",
        campaign_views.CampaignCancelPage.as_view(),
        name="org-campaign-cancel",
    ),
    path(ORG + "webhooks/", webhook_views.WebhookListPage.as_view(), name="org-webhooks"),
    path(ORG + "webhooks/<uuid:pk>/", webhook_views.WebhookDetailPage.as_view(), name="org-webhook"),
    path(ORG + "webhooks/<uuid:pk>/test/", webhook_views.WebhookTestPage.as_view(), name="org-webhook-test"),
    path(
        ORG + "webhooks/<uuid:pk>/rotate-secret/",
        webhook_views.WebhookRotateSecretPage.as_view(),
        name="org-webhook-rotate-secret",
    ),
    path(
        ORG + "webhooks/<uuid:pk>/active/",
        webhook_views.WebhookActivePage.as_view(),
        name="org-webhook-active",
    ),
    path(
        ORG + "webhooks/<uuid:pk>/delete/",
        webhook_views.WebhookDeletePage.as_view(),
        name="org-webhook-delete",
    ),
]
