// Command go-sdk-check drives the Ingress API through the Go server SDK the way the
// `lk` CLI does: request files are read with protojson and sent over Twirp protobuf.
//
// Results go to stdout as protojson (snake_case names, every field); a failure prints
// {"code": <twirp code>, "msg": ..., "meta": {...}} and exits 1 (2 for local errors).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/twitchtv/twirp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const usage = `usage: go-sdk-check <command>
  create <ingress.json>        CreateIngress from a CreateIngressRequest file
  update <ingress.json>        UpdateIngress from an UpdateIngressRequest file
  list [--room R] [--id ID]    ListIngress
  delete <ingress_id>          DeleteIngress
  room-list                    RoomService.ListRooms
  example                      the Go example of LiveKit's ingress docs
environment: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET`

// localError is a failure before any request was sent (usage, request file).
type localError struct{ msg string }

func (e localError) Error() string { return e.msg }

func local(format string, args ...any) error { return localError{fmt.Sprintf(format, args...)} }

func main() {
	if len(os.Args) < 2 {
		fail(local("%s", usage))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := run(ctx, os.Args[1], os.Args[2:])
	if err != nil {
		fail(err)
	}
	out, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(res)
	if err != nil {
		fail(local("%v", err))
	}
	fmt.Println(string(out))
}

func run(ctx context.Context, cmd string, args []string) (proto.Message, error) {
	url, key, secret := os.Getenv("LIVEKIT_URL"), os.Getenv("LIVEKIT_API_KEY"), os.Getenv("LIVEKIT_API_SECRET")
	client := lksdk.NewIngressClient(url, key, secret)
	switch cmd {
	case "create":
		req := &livekit.CreateIngressRequest{}
		if err := readRequest(args, req); err != nil {
			return nil, err
		}
		return client.CreateIngress(ctx, req)
	case "update":
		req := &livekit.UpdateIngressRequest{}
		if err := readRequest(args, req); err != nil {
			return nil, err
		}
		return client.UpdateIngress(ctx, req)
	case "list":
		fs := flag.NewFlagSet("list", flag.ContinueOnError)
		room := fs.String("room", "", "limit the list to a room name")
		id := fs.String("id", "", "list one ingress id")
		if err := fs.Parse(args); err != nil {
			return nil, local("%v", err)
		}
		return client.ListIngress(ctx, &livekit.ListIngressRequest{RoomName: *room, IngressId: *id})
	case "delete":
		if len(args) != 1 {
			return nil, local("delete takes one ingress id")
		}
		return client.DeleteIngress(ctx, &livekit.DeleteIngressRequest{IngressId: args[0]})
	case "room-list":
		return lksdk.NewRoomServiceClient(url, key, secret).ListRooms(ctx, &livekit.ListRoomsRequest{})
	case "example":
		return example(ctx)
	}
	return nil, local("unknown command %q\n%s", cmd, usage)
}

// readRequest reads a request file as `lk ingress create/update --request FILE` does.
func readRequest(args []string, req proto.Message) error {
	if len(args) != 1 {
		return local("expected one request file")
	}
	b, err := os.ReadFile(args[0])
	if err != nil {
		return local("%v", err)
	}
	if err := protojson.Unmarshal(b, req); err != nil {
		return local("%s: %v", args[0], err)
	}
	return nil
}

// example is the Go snippet of LiveKit's Ingress API docs, with the host and keys
// taken from the environment.
func example(ctx context.Context) (*livekit.IngressInfo, error) {
	ingressClient := lksdk.NewIngressClient(
		os.Getenv("LIVEKIT_URL"),
		os.Getenv("LIVEKIT_API_KEY"),
		os.Getenv("LIVEKIT_API_SECRET"),
	)

	t := true
	ingressRequest := &livekit.CreateIngressRequest{
		InputType:           livekit.IngressInput_RTMP_INPUT, // Or livekit.IngressInput_WHIP_INPUT
		Name:                "my-ingress",
		RoomName:            "my-room",
		ParticipantIdentity: "my-participant",
		ParticipantName:     "My Participant",
		// Transcode the input stream. Can only be false for WHIP.
		EnableTranscoding: &t,
	}

	info, err := ingressClient.CreateIngress(ctx, ingressRequest)
	if err != nil {
		return nil, err
	}
	return info, nil
}

func fail(err error) {
	body := map[string]any{}
	status := 1
	var terr twirp.Error
	var lerr localError
	switch {
	case errors.As(err, &lerr):
		body["code"], body["msg"] = "client_error", err.Error()
		status = 2
	case errors.As(err, &terr):
		body["code"], body["msg"] = string(terr.Code()), terr.Msg()
		if meta := terr.MetaMap(); len(meta) > 0 {
			body["meta"] = meta
		}
	default:
		body["code"], body["msg"] = string(twirp.Unknown), err.Error()
	}
	out, _ := json.Marshal(body)
	fmt.Println(string(out))
	os.Exit(status)
}
