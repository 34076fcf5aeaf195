'''polkitd mock for passkeyd's tests (python3-dbusmock template)

CheckAuthorization answers what SetResult set, or hangs (SetHang) until
CancelCheckAuthorization with its cancellation id fails it with
org.freedesktop.PolicyKit1.Error.Cancelled, as polkitd does. Every call is
recorded; Calls returns them as JSON.
'''

import json

import dbus

from dbusmock import MOCK_IFACE

BUS_NAME = 'org.freedesktop.PolicyKit1'
MAIN_OBJ = '/org/freedesktop/PolicyKit1/Authority'
MAIN_IFACE = 'org.freedesktop.PolicyKit1.Authority'
SYSTEM_BUS = True


def load(mock, _parameters):
    mock.result = (False, False, {})
    mock.hang = False
    mock.hanging = {}
    mock.calls = []


def plain(v):
    if isinstance(v, (dbus.Dictionary, dict)):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (dbus.Array, dbus.Struct, list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath, str)):
        return str(v)
    return int(v)


@dbus.service.method(MAIN_IFACE, in_signature='(sa{sv})sa{ss}us', out_signature='(bba{ss})',
                     async_callbacks=('ok_cb', 'err_cb'))
def CheckAuthorization(self, subject, action_id, details, flags, cancellation_id, ok_cb, err_cb):
    self.calls.append({'method': 'CheckAuthorization', 'subject_kind': str(subject[0]),
                       'subject': plain(subject[1]), 'action': str(action_id),
                       'details': plain(details), 'flags': int(flags),
                       'cancellation_id': str(cancellation_id)})
    if self.hang:
        self.hanging[str(cancellation_id)] = err_cb
        return
    authorized, challenge, out = self.result
    ok_cb((authorized, challenge, dbus.Dictionary(out, signature='ss')))


@dbus.service.method(MAIN_IFACE, in_signature='s', out_signature='')
def CancelCheckAuthorization(self, cancellation_id):
    self.calls.append({'method': 'CancelCheckAuthorization', 'cancellation_id': str(cancellation_id)})
    err_cb = self.hanging.pop(str(cancellation_id), None)
    if err_cb is None:
        raise dbus.exceptions.DBusException('No such cancellation_id',
                                            name='org.freedesktop.PolicyKit1.Error.Failed')
    err_cb(dbus.exceptions.DBusException('The authentication was cancelled',
                                         name='org.freedesktop.PolicyKit1.Error.Cancelled'))


@dbus.service.method(MOCK_IFACE, in_signature='bba{ss}', out_signature='')
def SetResult(self, authorized, challenge, details):
    self.result = (bool(authorized), bool(challenge), dict(details))


@dbus.service.method(MOCK_IFACE, in_signature='b', out_signature='')
def SetHang(self, hang):
    self.hang = bool(hang)


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='s')
def Calls(self):
    return json.dumps(self.calls)


@dbus.service.method(MOCK_IFACE, in_signature='', out_signature='')
def Reset(self):
    self.calls = []
