# The disk is not trusted: corrupt, truncated, foreign and expired store
# files are skipped with one log line and removed at startup, files of
# certificates no longer configured are collected, and startup goes on.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;
use Time::HiRes qw(time sleep);

plan tests => 15;

my $dir = RSTest::store_dir();
sub file_of { "$dir/" . RSTest::cert_id(shift) . '.der' }
sub put {
    my ($path, $bytes) = @_;
    open my $fh, '>', $path or die "$path: $!";
    binmode $fh;
    print $fh $bytes;
    close $fh;
}

# everything below has a valid stored response by now
ok(RSTest::wait_for(sub { -f file_of('muststaple') && -f file_of('slow') && -f file_of('forceurl')
                          && -f file_of('good') && -f file_of('renew') }, 5));

# private: 0700 directory, 0600 files, owned by the children's user
my @d = stat $dir;
my @f = stat file_of('good');
ok(($d[2] & 0777) == 0700 && ($f[2] & 0777) == 0600);
ok($< != 0 || ($f[4] == scalar(getpwnam('nobody')) && $d[4] == $f[4]));

# an expired one: the responder fails until the 8 s response has expired
RSTest::set_mode('renew', 'http500');
my $h = RSTest::handshake('renew');
RSTest::wait_for(sub { time > ($h->{next_update} // 0) + 1 }, 12, 0.2);

my $server = Apache::Test::config()->server;
$server->stop;
put(file_of('muststaple'), "this is not DER");
put(file_of('slow'), RSTest::slurp(file_of('good')));             # another certificate's
my $fu = RSTest::slurp(file_of('forceurl'));
put(file_of('forceurl'), substr($fu, 0, length($fu) / 2));        # truncated
unlink file_of('revoked');
mkdir file_of('revoked');                                          # unreadable as a file
my $stranger = "$dir/" . ('ab' x 20) . '.der';
put($stranger, RSTest::slurp(file_of('good')));                   # no such certificate
$server->start;

my $log = RSTest::error_log();
ok($log =~ /RS0302: stored response for CN=muststaple\.rs\.test,.* is not usable \(malformed/);
ok($log =~ /RS0302: stored response for CN=slow\.rs\.test,.* is not usable \(wrong-certificate/);
ok($log =~ /RS0302: stored response for CN=forceurl\.rs\.test,.* is not usable \(malformed/);
ok($log =~ /RS0302: stored response for CN=renew\.rs\.test,.* is not usable \(expired/);
ok($log =~ /RS0304: removed the stored response of certificate abab/);
ok($log =~ /RS0302: stored response for CN=revoked\.rs\.test,.* is not usable \(unreadable or too large\)/);
ok(!-f $stranger);

# the server runs and fetches fresh ones for them
ok(RSTest::handshake('good')->{stapled});
for my $leaf (qw(muststaple slow forceurl)) {
    ok(RSTest::wait_for(sub { my $x = RSTest::handshake($leaf); $x->{stapled} }, 8));
}
RSTest::set_mode('renew', 'good', 8);
ok(RSTest::wait_for(sub { RSTest::handshake('renew')->{stapled} }, 8));
