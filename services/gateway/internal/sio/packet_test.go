package sio

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParsePacket(t *testing.T) {
	cases := []struct {
		in   string
		want Packet
		err  error
	}{
		{in: "3", want: Packet{Engine: EnginePong, Namespace: "/", ID: NoAck}},
		{in: "40", want: Packet{Engine: EngineMessage, Type: Connect, Namespace: "/", ID: NoAck, Data: []byte{}}},
		{in: `40{"token":"x"}`, want: Packet{Engine: EngineMessage, Type: Connect, Namespace: "/", ID: NoAck, Data: []byte(`{"token":"x"}`)}},
		{in: `40/nope,{"token":"x"}`, want: Packet{Engine: EngineMessage, Type: Connect, Namespace: "/nope", ID: NoAck, Data: []byte(`{"token":"x"}`)}},
		{in: `421["endpoint",{}]`, want: Packet{Engine: EngineMessage, Type: Event, Namespace: "/", ID: 1, Data: []byte(`["endpoint",{}]`)}},
		{in: `420["endpoint",{}]`, want: Packet{Engine: EngineMessage, Type: Event, Namespace: "/", ID: 0, Data: []byte(`["endpoint",{}]`)}},
		{in: `42["endpoint",{}]`, want: Packet{Engine: EngineMessage, Type: Event, Namespace: "/", ID: NoAck, Data: []byte(`["endpoint",{}]`)}},
		{in: `42/,7["x"]`, want: Packet{Engine: EngineMessage, Type: Event, Namespace: "/", ID: 7, Data: []byte(`["x"]`)}},
		{in: "41", want: Packet{Engine: EngineMessage, Type: Disconnect, Namespace: "/", ID: NoAck, Data: []byte{}}},
		{in: "", err: ErrEmpty},
		{in: "9", err: ErrEngineType},
		{in: "4", err: ErrType},
		{in: "48", err: ErrType},
		{in: `451-["ev",{"_placeholder":true,"num":0}]`, err: ErrBinary},
		{in: `421234567890123456["x"]`, err: ErrAckID},
		{in: `42["x"`, err: ErrPayloadJSON},
		{in: `42{}x`, err: ErrPayloadJSON},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			got, err := ParsePacket([]byte(c.in))
			if c.err != nil {
				require.ErrorIs(t, err, c.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, c.want, got)
		})
	}
}

func TestParseEvent(t *testing.T) {
	name, args, err := ParseEvent([]byte(`["endpoint",{"endpointName":"addToRoom"},2]`))
	require.NoError(t, err)
	require.Equal(t, "endpoint", name)
	require.Len(t, args, 2)
	for _, bad := range []string{`{}`, `[]`, `[1]`, `"x"`, `[null]`} {
		_, _, err := ParseEvent([]byte(bad))
		require.Error(t, err, bad)
	}
}

// TestQuickEvent: the spelling socket.io-client sends is read without
// encoding/json; anything else goes to the strict decoder, which decides.
func TestQuickEvent(t *testing.T) {
	for _, c := range []struct {
		in   string
		name string
		args []string
	}{
		{`["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`, "endpoint", []string{`{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}`}},
		{`["ping"]`, "ping", nil},
		{`["x",[1,2]]`, "x", []string{`[1,2]`}},
	} {
		name, args, ok := quickEvent([]byte(c.in))
		require.True(t, ok, c.in)
		require.Equal(t, c.name, name)
		require.Len(t, args, len(c.args))
		for i := range args {
			require.Equal(t, c.args[i], string(args[i]))
		}
	}
	for _, other := range []string{`["a",1,2]`, `["a",{"x":1},{"y":2}]`, `[ "a",1]`, `["a\"b",1]`, `["é",1]`, `["a",1]]`, `["a",]`, `["a"`, `[1]`} {
		_, _, ok := quickEvent([]byte(other))
		require.False(t, ok, other)
	}
	name, args, err := ParseEvent([]byte(`["a",{"x":1},{"y":2}]`))
	require.NoError(t, err, "the strict decoder takes what the quick one leaves")
	require.Equal(t, "a", name)
	require.Len(t, args, 2)
}

// FuzzParseEvent: whatever the quick decoder accepts, the strict one reads
// the same way.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{`["endpoint",{"endpointName":"addToRoom"}]`, `["x"]`, `["x",1,2]`, `["a",{"x":1},{"y":2}]`, `["x",[1]]]`, `["\u0041",1]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, args, ok := quickEvent(b)
		if !ok {
			return
		}
		sname, sargs, err := parseEventStrict(b)
		if err != nil {
			t.Fatalf("quick read %q, strict refused it: %v", b, err)
		}
		if name != sname || len(args) != len(sargs) {
			t.Fatalf("%q: quick %q %d args, strict %q %d args", b, name, len(args), sname, len(sargs))
		}
		for i := range args {
			if !bytes.Equal(args[i], sargs[i]) {
				t.Fatalf("%q: arg %d: quick %q, strict %q", b, i, args[i], sargs[i])
			}
		}
	})
}

func TestEncode(t *testing.T) {
	require.Equal(t, `0{"sid":"s","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000}`,
		string(AppendOpen(nil, OpenPayload{SID: "s", PingInterval: 25000, PingTimeout: 20000, MaxPayload: 1000})))
	require.Equal(t, `40{"sid":"abc"}`, string(AppendConnectOK(nil, "abc", "")))
	require.Equal(t, `40{"sid":"abc","pid":"p1"}`, string(AppendConnectOK(nil, "abc", "p1")))
	require.Equal(t, `44{"message":"token expired","data":{"code":401}}`, string(AppendConnectError(nil, "token expired", 401)))
	require.Equal(t, `44/nope,{"message":"Invalid namespace"}`, string(AppendNamespaceError(nil, "/nope")))
	require.Equal(t, `431[{"ok":true}]`, string(AppendAck(nil, 1, []byte(`{"ok":true}`))))
	require.Equal(t, `42["broadcast",`, string(AppendEventPrefix(nil, "broadcast")))
}

// FuzzParsePacket: any frame either fails with an error or yields a packet
// whose payload is valid JSON and whose ack id is in range; it never panics.
func FuzzParsePacket(f *testing.F) {
	for _, s := range []string{"3", "2", "40", `40{"token":"x","clientId":"c"}`, `421["endpoint",{"endpointName":"addToRoom","endpointArgs":{"roomName":"board-b1"}}]`,
		`42/nope,3["x"]`, `451-["ev",{"_placeholder":true,"num":0}]`, "41", `44{"message":"x"}`, `43["x"]`, "4/", "4" + "2/" + string(make([]byte, 200))} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePacket(b)
		if err != nil {
			return
		}
		if p.Engine != EngineMessage {
			return
		}
		if len(p.Data) > 0 && !json.Valid(p.Data) {
			t.Fatalf("payload %q is not JSON", p.Data)
		}
		if p.ID < NoAck {
			t.Fatalf("ack id %d", p.ID)
		}
		if len(p.Namespace) > maxNamespaceLen {
			t.Fatalf("namespace of %d bytes", len(p.Namespace))
		}
		if p.Type == Event && len(p.Data) > 0 {
			_, _, _ = ParseEvent(p.Data)
		}
		if p.Type == Connect {
			_, _ = ParseConnectAuth(p.Data)
		}
	})
}
