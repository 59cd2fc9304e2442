//! The built-in detector ids and the candidate sink the scanners write into.

/// A built-in detector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Email,
    Phone,
    CreditCard,
    UsSsn,
    Iban,
    Ipv4,
    Ipv6,
    AwsAccessKey,
    AwsSecretKey,
    GithubToken,
    SlackToken,
    OpenaiKey,
    AnthropicKey,
    GoogleApiKey,
    StripeKey,
    Jwt,
    PrivateKey,
    SlackWebhook,
    NpmToken,
    PypiToken,
    GitlabToken,
    AzureStorageKey,
    GcpServiceAccount,
    GenericSecret,
    DatabaseUrl,
}

/// Number of built-in detectors.
pub(crate) const COUNT: usize = 25;

/// Every built-in, in the order of [`crate::KNOWN_DETECTORS`].
pub(crate) const ALL: [Builtin; COUNT] = [
    Builtin::Email,
    Builtin::Phone,
    Builtin::CreditCard,
    Builtin::UsSsn,
    Builtin::Iban,
    Builtin::Ipv4,
    Builtin::Ipv6,
    Builtin::AwsAccessKey,
    Builtin::AwsSecretKey,
    Builtin::GithubToken,
    Builtin::SlackToken,
    Builtin::OpenaiKey,
    Builtin::AnthropicKey,
    Builtin::GoogleApiKey,
    Builtin::StripeKey,
    Builtin::Jwt,
    Builtin::PrivateKey,
    Builtin::SlackWebhook,
    Builtin::NpmToken,
    Builtin::PypiToken,
    Builtin::GitlabToken,
    Builtin::AzureStorageKey,
    Builtin::GcpServiceAccount,
    Builtin::GenericSecret,
    Builtin::DatabaseUrl,
];

impl Builtin {
    /// The stable id used in policies and findings.
    pub(crate) fn id(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::CreditCard => "credit_card",
            Builtin::UsSsn => "us_ssn",
            Builtin::Iban => "iban",
            Builtin::Ipv4 => "ipv4",
            Builtin::Ipv6 => "ipv6",
            Builtin::AwsAccessKey => "aws_access_key",
            Builtin::AwsSecretKey => "aws_secret_key",
            Builtin::GithubToken => "github_token",
            Builtin::SlackToken => "slack_token",
            Builtin::OpenaiKey => "openai_key",
            Builtin::AnthropicKey => "anthropic_key",
            Builtin::GoogleApiKey => "google_api_key",
            Builtin::StripeKey => "stripe_key",
            Builtin::Jwt => "jwt",
            Builtin::PrivateKey => "private_key",
            Builtin::SlackWebhook => "slack_webhook",
            Builtin::NpmToken => "npm_token",
            Builtin::PypiToken => "pypi_token",
            Builtin::GitlabToken => "gitlab_token",
            Builtin::AzureStorageKey => "azure_storage_key",
            Builtin::GcpServiceAccount => "gcp_service_account",
            Builtin::GenericSecret => "generic_secret",
            Builtin::DatabaseUrl => "database_url",
        }
    }

    /// The built-in with this id.
    pub(crate) fn from_id(id: &str) -> Option<Builtin> {
        ALL.iter().copied().find(|b| b.id() == id)
    }

    /// Position in [`ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A raw candidate: detector rank (policy order) and byte span in the scanned string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cand {
    pub(crate) rank: u16,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// Where scanners put candidates; drops those of detectors the policy did not enable.
pub(crate) struct Sink<'a> {
    pub(crate) ranks: &'a [Option<u16>; COUNT],
    pub(crate) out: &'a mut Vec<Cand>,
}

impl Sink<'_> {
    /// Whether `b` is enabled.
    #[inline]
    pub(crate) fn on(&self, b: Builtin) -> bool {
        self.ranks.get(b.index()).copied().flatten().is_some()
    }

    /// Record a candidate of `b` over bytes `start..end` (ignored when disabled or empty).
    #[inline]
    pub(crate) fn push(&mut self, b: Builtin, start: usize, end: usize) {
        if let Some(Some(rank)) = self.ranks.get(b.index()).copied()
            && end > start
        {
            self.out.push(Cand { rank, start, end });
        }
    }
}
