// A tour of skyge from C++, against one node over mutual TLS, printed as "key value" lines
// (the lab test reads them): members, the first membership event, a lock taken and given back
// in a session, HA status, a switch.
//   skyge_tour HOST CERT_PREFIX SLOT LOCK SERVICE_DOMAIN SERVICE_SLOT
// CERT_PREFIX.crt, CERT_PREFIX.key and ca.crt beside them: `skyge ca issue --admin NAME`.
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>

#include <grpcpp/grpcpp.h>

#include "skyge/v1/ha.grpc.pb.h"
#include "skyge/v1/heartbeat.grpc.pb.h"
#include "skyge/v1/lock.grpc.pb.h"

namespace v1 = skyge::v1;

static std::string read_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

static std::shared_ptr<grpc::Channel> channel(const std::string& host, int port,
                                              const std::string& prefix) {
  grpc::SslCredentialsOptions tls;
  std::string folder = prefix.substr(0, prefix.find_last_of('/'));
  tls.pem_root_certs = read_file(folder + "/ca.crt");
  tls.pem_private_key = read_file(prefix + ".key");
  tls.pem_cert_chain = read_file(prefix + ".crt");
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("cluster.skyge.internal");  // every daemon's certificate name
  return grpc::CreateCustomChannel(host + ":" + std::to_string(port),
                                   grpc::SslCredentials(tls), args);
}

static void check(const grpc::Status& status, const char* what) {
  if (!status.ok()) throw std::runtime_error(std::string(what) + ": " + status.error_message());
}

int main(int argc, char** argv) {
  if (argc != 7) {
    std::cerr << "usage: skyge_tour HOST CERT_PREFIX SLOT LOCK SERVICE_DOMAIN SERVICE_SLOT\n";
    return 2;
  }
  const std::string host = argv[1], prefix = argv[2];
  const unsigned slot = std::stoul(argv[3]), lock = std::stoul(argv[4]);
  const unsigned domain = std::stoul(argv[5]), service_slot = std::stoul(argv[6]);
  try {
    auto heartbeat = v1::Heartbeat::NewStub(channel(host, 7410, prefix));
    {
      grpc::ClientContext context;
      v1::MembershipView view;
      check(heartbeat->ListMembers(&context, v1::ListMembersRequest(), &view), "ListMembers");
      std::cout << "members";
      for (const auto& member : view.members()) std::cout << " " << member.node().domain();
      std::cout << "\n";
    }
    {
      grpc::ClientContext context;
      auto watch = heartbeat->WatchMembership(&context, v1::WatchMembershipRequest());
      v1::MembershipEvent event;
      if (!watch->Read(&event)) throw std::runtime_error("WatchMembership ended at once");
      std::cout << "first_event " << (event.has_snapshot() ? "snapshot" : "other") << "\n";
      context.TryCancel();
      watch->Finish();
    }
    {
      auto locks = v1::Lock::NewStub(channel(host, 7412, prefix));
      grpc::ClientContext context;
      auto session = locks->Session(&context);
      v1::SessionRequest request;
      request.mutable_open()->set_label("c++ tour");
      session->Write(request);
      request.Clear();
      request.mutable_acquire()->set_slot(slot);
      request.mutable_acquire()->set_lock(lock);
      session->Write(request);
      v1::SessionEvent event;
      bool released = false;
      while (!released && session->Read(&event)) {
        if (event.has_granted()) {
          std::cout << "fencing_token " << event.granted().fencing_token() << "\n";
          request.Clear();
          request.mutable_release()->set_slot(slot);
          request.mutable_release()->set_lock(lock);
          session->Write(request);
        } else if (event.has_failed() || event.has_lost()) {
          throw std::runtime_error("lock not held");
        } else if (event.has_released()) {
          released = true;
          std::cout << "released yes\n";
        }
      }
      session->WritesDone();
      context.TryCancel();
      session->Finish();
    }
    auto ha = v1::Ha::NewStub(channel(host, 7413, prefix));
    {
      grpc::ClientContext context;
      v1::StatusResponse status;
      check(ha->Status(&context, v1::StatusRequest(), &status), "Status");
      for (const auto& service : status.services()) {
        if (service.slot() != service_slot || service.type() != v1::TAKEOVER_FIFO) continue;
        std::cout << "active " << service.active_domain() << "\nwaiting";
        for (auto waiting : service.waiting_domains()) std::cout << " " << waiting;
        std::cout << "\n";
      }
    }
    {
      grpc::ClientContext context;
      v1::CommandRequest command;
      command.set_domain(domain);
      command.set_type(v1::TAKEOVER_FIFO);
      command.set_slot(service_slot);
      command.set_action(v1::ACTION_SWITCH);
      v1::CommandReply reply;
      check(ha->Command(&context, command, &reply), "Command");
      std::cout << "switched yes\n";
    }
  } catch (const std::exception& error) {
    std::cerr << "tour failed: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
