package gateway

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// TestMemberSet: one member without a map, two or more in a map, and back
// down to none.
func TestMemberSet(t *testing.T) {
	a, b, c := &socket{id: "a"}, &socket{id: "b"}, &socket{id: "c"}
	var m memberSet
	require.Zero(t, m.len())
	require.False(t, m.has(a))
	require.Empty(t, m.appendTo(nil))

	m.add(a)
	m.add(a)
	require.Equal(t, 1, m.len())
	require.True(t, m.has(a))
	require.False(t, m.has(b))
	require.Nil(t, m.many)
	require.Equal(t, []*socket{a}, m.appendTo(nil))

	m.add(b)
	m.add(c)
	require.Equal(t, 3, m.len())
	require.True(t, m.has(a) && m.has(b) && m.has(c))
	require.ElementsMatch(t, []*socket{a, b, c}, m.appendTo(nil))

	m.remove(a)
	m.remove(a)
	require.Equal(t, 2, m.len())
	require.False(t, m.has(a))
	m.remove(b)
	m.remove(c)
	require.Zero(t, m.len())
	require.Empty(t, m.appendTo(nil))

	var one memberSet
	one.add(a)
	one.remove(b) // not a member: changes nothing
	require.True(t, one.has(a))
	one.remove(a)
	require.Zero(t, one.len())
}
