#include "services/scheduling/client/scheduling_client.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status/errors.h"
#include "common/status/macros.h"
#include "spdlog/spdlog.h"

namespace continuum::scheduling {
namespace {

class GrpcSchedulingClient final : public SchedulingClient {
 public:
  GrpcSchedulingClient(std::shared_ptr<grpc::Channel> channel, auth::ServiceTokenSource* tokens,
                       absl::Duration deadline, std::unique_ptr<auth::ServiceTokenSource> owned = nullptr)
      : channel_(channel), stub_(sv1::SchedulingService::NewStub(channel)), owned_tokens_(std::move(owned)),
        tokens_(owned_tokens_ ? owned_tokens_.get() : tokens), deadline_(deadline) {}

  absl::Status Reachability() override {
    switch (channel_->GetState(/*try_to_connect=*/true)) {
      case GRPC_CHANNEL_TRANSIENT_FAILURE:
        return absl::UnavailableError("cannot connect to scheduling");
      case GRPC_CHANNEL_SHUTDOWN:
        return absl::UnavailableError("the channel to scheduling is shut down");
      case GRPC_CHANNEL_CONNECTING:
        // Between failed attempts the channel tries again: not reachable until it connects.
        return absl::UnavailableError("connecting to scheduling");
      default:  // READY, or IDLE (no connection needed yet; just asked to connect)
        return absl::OkStatus();
    }
  }

  absl::StatusOr<sv1::Appointment> GetAppointment(const std::string& name) override {
    sv1::GetAppointmentRequest r;
    r.set_name(name);
    return Call<sv1::Appointment>(&sv1::SchedulingService::Stub::GetAppointment, r);
  }
  absl::StatusOr<sv1::CareTeam> GetCareTeam(const std::string& clinic_id, const std::string& client_id) override {
    sv1::GetCareTeamRequest r;
    r.set_name(absl::StrCat("clinics/", clinic_id, "/careTeams/", client_id));
    return Call<sv1::CareTeam>(&sv1::SchedulingService::Stub::GetCareTeam, r);
  }
  absl::StatusOr<sv1::Program> GetProgram(const std::string& name) override {
    sv1::GetProgramRequest r;
    r.set_name(name);
    return Call<sv1::Program>(&sv1::SchedulingService::Stub::GetProgram, r);
  }
  absl::StatusOr<sv1::Clinic> GetClinic(const std::string& clinic_id) override {
    sv1::GetClinicRequest r;
    r.set_name("clinics/" + clinic_id);
    return Call<sv1::Clinic>(&sv1::SchedulingService::Stub::GetClinic, r);
  }
  absl::StatusOr<sv1::Person> GetPerson(const std::string& person_id) override {
    sv1::GetPersonRequest r;
    r.set_name("people/" + person_id);
    return Call<sv1::Person>(&sv1::SchedulingService::Stub::GetPerson, r);
  }
  absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string& clinic_id, cv1::Role role) override {
    sv1::ListPeopleRequest r;
    r.set_clinic("clinics/" + clinic_id);
    r.set_role(role);
    r.set_page_size(500);
    ASSIGN_OR_RETURN(sv1::ListPeopleResponse people, Call<sv1::ListPeopleResponse>(&sv1::SchedulingService::Stub::ListPeople, r));
    std::vector<std::string> ids;
    for (const auto& p : people.people()) ids.push_back(p.name().substr(p.name().rfind('/') + 1));
    return ids;
  }
  absl::Status SetAppointmentState(const std::string& name, sv1::Appointment::State state,
                                   const std::string& request_id) override {
    sv1::UpdateAppointmentStateRequest r;
    r.set_name(name);
    r.set_state(state);
    r.set_request_id(request_id);
    return Call<sv1::Appointment>(&sv1::SchedulingService::Stub::UpdateAppointmentState, r).status();
  }

 private:
  template <typename Resp, typename Req>
  absl::StatusOr<Resp> Call(grpc::Status (sv1::SchedulingService::Stub::*method)(grpc::ClientContext*, const Req&,
                                                                                 Resp*),
                            const Req& req) {
    ASSIGN_OR_RETURN(std::string token, tokens_->Token());
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline_));
    ctx.AddMetadata("authorization", "Bearer " + token);
    Resp resp;
    grpc::Status s = (stub_.get()->*method)(&ctx, req, &resp);
    if (s.ok()) return resp;
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return MakeError(absl::StatusCode::kUnavailable, "UPSTREAM_UNAVAILABLE",
                       absl::StrCat("the scheduling service did not answer (", s.error_message(),
                                    "); retry with the same request_id"),
                       {{"service", "scheduling"}});
    }
    return FromGrpcStatus(s);
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<sv1::SchedulingService::Stub> stub_;
  std::unique_ptr<auth::ServiceTokenSource> owned_tokens_;
  auth::ServiceTokenSource* tokens_;
  absl::Duration deadline_;
};

class CareTeamCache final : public SchedulingClient {
 public:
  CareTeamCache(std::unique_ptr<SchedulingClient> inner, Clock& clock, absl::Duration ttl, size_t max_entries)
      : inner_(std::move(inner)), clock_(clock), ttl_(ttl), max_entries_(max_entries) {}

  absl::StatusOr<sv1::CareTeam> GetCareTeam(const std::string& clinic_id, const std::string& client_id) override {
    const std::string key = absl::StrCat(clinic_id, "/", client_id);
    const absl::Time now = clock_.Now();
    {
      absl::MutexLock lock(&mu_);
      auto it = teams_.find(key);
      if (it != teams_.end() && now < it->second.expires) return it->second.team;
    }
    ASSIGN_OR_RETURN(sv1::CareTeam team, inner_->GetCareTeam(clinic_id, client_id));
    absl::MutexLock lock(&mu_);
    // Bounded without bookkeeping: when full, start over (a burst of misses, never growth).
    if (teams_.size() >= max_entries_) teams_.clear();
    teams_[key] = Entry{team, now + ttl_};
    return team;
  }

  absl::StatusOr<sv1::Appointment> GetAppointment(const std::string& name) override {
    return inner_->GetAppointment(name);
  }
  absl::StatusOr<sv1::Program> GetProgram(const std::string& name) override { return inner_->GetProgram(name); }
  absl::StatusOr<sv1::Clinic> GetClinic(const std::string& clinic_id) override { return inner_->GetClinic(clinic_id); }
  absl::StatusOr<sv1::Person> GetPerson(const std::string& person_id) override {
    return inner_->GetPerson(person_id);
  }
  absl::StatusOr<std::vector<std::string>> MembersWithRole(const std::string& clinic_id, cv1::Role role) override {
    return inner_->MembersWithRole(clinic_id, role);
  }
  absl::Status SetAppointmentState(const std::string& name, sv1::Appointment::State state,
                                   const std::string& request_id) override {
    return inner_->SetAppointmentState(name, state, request_id);
  }
  absl::Status Reachability() override { return inner_->Reachability(); }

 private:
  struct Entry {
    sv1::CareTeam team;
    absl::Time expires;
  };
  std::unique_ptr<SchedulingClient> inner_;
  Clock& clock_;
  const absl::Duration ttl_;
  const size_t max_entries_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> teams_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

std::unique_ptr<SchedulingClient> WithCareTeamCache(std::unique_ptr<SchedulingClient> inner, Clock& clock,
                                                    absl::Duration ttl, size_t max_entries) {
  if (ttl <= absl::ZeroDuration() || max_entries == 0) return inner;
  return std::make_unique<CareTeamCache>(std::move(inner), clock, ttl, max_entries);
}

std::unique_ptr<SchedulingClient> NewGrpcSchedulingClient(std::shared_ptr<grpc::Channel> channel,
                                                          auth::ServiceTokenSource* tokens, absl::Duration deadline) {
  return std::make_unique<GrpcSchedulingClient>(std::move(channel), tokens, deadline);
}

Runtime::Periodic ReportSchedulingHealth(Runtime& rt, SchedulingClient& client) {
  auto last = std::make_shared<bool>(true);
  return {"scheduling health", absl::Seconds(1), [&rt, &client, last] {
            absl::Status s = client.Reachability();
            if (s.ok() != *last) {
              if (s.ok()) spdlog::warn("scheduling is reachable again");
              else spdlog::error("scheduling unreachable, reporting continuum.scheduling NOT_SERVING: {}", s.ToString());
            }
            *last = s.ok();
            rt.host->SetServing("continuum.scheduling", s.ok());
            return absl::OkStatus();
          }};
}

SchedulingClientConfig ReadSchedulingClientConfig(ConfigSource& c) {
  SchedulingClientConfig out;
  out.address = c.String("scheduling-address", "127.0.0.1:7001", "scheduling service host:port");
  out.deadline = c.Duration("scheduling-deadline", absl::Seconds(3), "deadline of each call to scheduling");
  out.token_file = c.String("service-token-file", "",
                            "this service's token for calling scheduling; empty = mint one with the HS256 secret");
  out.care_team_cache_ttl =
      c.Duration("care-team-cache-ttl", absl::Seconds(5),
                 "how long a care team read from scheduling is reused for access checks (0 = ask every time); a "
                 "member removed from a team keeps access on this replica for up to this long");
  out.load_balancing = c.String(
      "scheduling-load-balancing", "round_robin",
      "round_robin: calls spread over every address --scheduling-address resolves to (a headless Service's "
      "pods, or ipv4:host1:port,host2:port); pick_first: all calls over one connection");
  if (out.load_balancing != "round_robin" && out.load_balancing != "pick_first") {
    c.AddError(absl::StrCat("--scheduling-load-balancing must be round_robin or pick_first, not '",
                            out.load_balancing, "'"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<SchedulingClient>> ConnectScheduling(const SchedulingClientConfig& config,
                                                                    const CommonConfig& common,
                                                                    const std::string& subject) {
  ASSIGN_OR_RETURN(auto creds, auth::MakeChannelCredentials(common.server.tls));
  auto tokens = std::make_unique<auth::ServiceTokenSource>(subject, common.jwt, config.token_file, RealClock::Get());
  // gRPC's default, pick_first, sends everything over one connection to the first address
  // that answers: every session-record and messaging replica would load one scheduling pod.
  grpc::ChannelArguments args;
  args.SetLoadBalancingPolicyName(config.load_balancing);
  return WithCareTeamCache(
      std::make_unique<GrpcSchedulingClient>(grpc::CreateCustomChannel(config.address, creds, args), nullptr,
                                             config.deadline, std::move(tokens)),
      RealClock::Get(), config.care_team_cache_ttl);
}

}  // namespace continuum::scheduling
